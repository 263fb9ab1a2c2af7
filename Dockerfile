# couch-kafka-bridge: multi-stage build on Debian bookworm, the distribution
# whose packages the project is built and tested with.
#
#   docker build -t couch-kafka-bridge .
#   (no `# syntax=` line: BuildKit would fetch a front-end image for it, which
#   fails without a registry; nothing here needs more than the classic syntax)
#   docker compose up -d          (see docker-compose.yml)

# --- build stage: the same package list as a developer machine ------------
FROM debian:bookworm AS build
ENV DEBIAN_FRONTEND=noninteractive
# Copied alone first so the package layer is cached across source changes.
COPY scripts/install-deps.sh /src/scripts/install-deps.sh
RUN bash /src/scripts/install-deps.sh --build-only && rm -rf /var/lib/apt/lists/*
# Only the inputs of the build, so that a change to tests, docs or scripts
# reuses the compiled layer (tests/deploy checks this list against the
# top-level CMakeLists.txt).
COPY CMakeLists.txt /src/
COPY cmake /src/cmake
COPY common /src/common
COPY metrics /src/metrics
COPY couch /src/couch
COPY kafka /src/kafka
COPY checkpoint /src/checkpoint
COPY bridge /src/bridge
COPY deploy/runtime-packages.sh /src/deploy/runtime-packages.sh
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCKB_BUILD_TESTS=OFF \
 && cmake --build /build --target couch-kafka-bridge \
 && cmake --install /build --prefix /out/usr/local --strip \
 && /out/usr/local/bin/couch-kafka-bridge --version \
 && bash /src/deploy/runtime-packages.sh /out/usr/local/bin/couch-kafka-bridge > /out/runtime-packages.txt \
 && cat /out/runtime-packages.txt

# --- runtime stage: the binary and the runtime halves of its libraries ----
FROM debian:bookworm-slim
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /out/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update -qq \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y -qq --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && useradd --system --uid 10001 --home-dir /var/lib/couch-kafka-bridge --create-home bridge
COPY --from=build /out/usr/local/bin/couch-kafka-bridge /usr/local/bin/couch-kafka-bridge

USER bridge
WORKDIR /var/lib/couch-kafka-bridge
# Checkpoints must survive container replacement: mount a volume here.
VOLUME ["/var/lib/couch-kafka-bridge"]
# Inside a container the operations server must listen on all interfaces to
# be reachable by Prometheus; flags given at run time still win.
ENV COUCH_BRIDGE_HTTP_LISTEN=0.0.0.0:9108 \
    COUCH_BRIDGE_CHECKPOINT_DIR=/var/lib/couch-kafka-bridge/checkpoints
EXPOSE 9108
# /healthz through bash's /dev/tcp: the slim image has no curl or wget.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9108 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
# SIGTERM: stop reading, wait for in-flight records, flush checkpoints, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/couch-kafka-bridge"]
