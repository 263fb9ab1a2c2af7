// A stand-in for libFuzzer in the ordinary test build (CI): runs one fuzz
// target's LLVMFuzzerTestOneInput on every file of its seed corpus, then on
// a fixed number of inputs mutated from them with a fixed seed (bytes
// flipped, inserted, erased, duplicated, two inputs spliced, an input cut
// short). Deterministic and a few seconds long: it proves that the harness
// builds with the project's compiler and warnings and that the recordings
// and their near neighbours pass its checks. The real fuzzing is
// scripts/fuzz.sh (libFuzzer, ASan+UBSan).
//   fuzz_replay_<target> <corpus-dir> [mutations=20000] [seed=14]
// Exits 0 when every input passed; a failed check traps (the harness's
// __builtin_trap), which ctest reports as a failure.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size);

namespace {

using bytes = std::vector<std::uint8_t>;

bytes read_file(std::filesystem::path const& p) {
    std::ifstream in(p, std::ios::binary);
    return bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Characters the parsers care about: mutations that hit structure.
constexpr char interesting[] = "{}[]\",:\\\r\n0123456789-eE.tfn u\xff";

bytes mutate(bytes in, std::vector<bytes> const& corpus, std::mt19937_64& rng) {
    auto pick = [&](std::size_t n) { return n == 0 ? std::size_t{0} : static_cast<std::size_t>(rng() % n); };
    int const steps = 1 + static_cast<int>(pick(4));
    for (int s = 0; s < steps; ++s) {
        switch (pick(6)) {
        case 0: // flip a byte
            if (!in.empty()) {
                in[pick(in.size())] ^= static_cast<std::uint8_t>(1u << pick(8));
            }
            break;
        case 1: // insert a structural character
            in.insert(in.begin() + static_cast<std::ptrdiff_t>(pick(in.size() + 1)),
                      static_cast<std::uint8_t>(interesting[pick(sizeof interesting - 1)]));
            break;
        case 2: { // erase a range
            if (in.empty()) {
                break;
            }
            auto const at = pick(in.size());
            auto const n = 1 + pick(std::min<std::size_t>(16, in.size() - at));
            in.erase(in.begin() + static_cast<std::ptrdiff_t>(at), in.begin() + static_cast<std::ptrdiff_t>(at + n));
            break;
        }
        case 3: { // duplicate a range
            if (in.empty()) {
                break;
            }
            auto const at = pick(in.size());
            auto const n = 1 + pick(std::min<std::size_t>(64, in.size() - at));
            bytes const piece(in.begin() + static_cast<std::ptrdiff_t>(at), in.begin() + static_cast<std::ptrdiff_t>(at + n));
            in.insert(in.begin() + static_cast<std::ptrdiff_t>(pick(in.size() + 1)), piece.begin(), piece.end());
            break;
        }
        case 4: { // splice the tail of another input
            auto const& other = corpus[pick(corpus.size())];
            if (other.empty()) {
                break;
            }
            in.resize(pick(in.size() + 1));
            auto const from = pick(other.size());
            in.insert(in.end(), other.begin() + static_cast<std::ptrdiff_t>(from), other.end());
            break;
        }
        default: // cut short
            in.resize(pick(in.size() + 1));
            break;
        }
    }
    if (in.size() > 8192) {
        in.resize(8192);
    }
    return in;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s <corpus-dir> [mutations] [seed]\n", argv[0]);
        return 2;
    }
    std::size_t const mutations = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 20000;
    std::uint64_t const seed = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 14;

    std::vector<std::filesystem::path> files;
    for (auto const& e : std::filesystem::directory_iterator(argv[1])) {
        if (e.is_regular_file()) {
            files.push_back(e.path());
        }
    }
    std::sort(files.begin(), files.end()); // the same order everywhere: a replayable run
    std::vector<bytes> corpus;
    for (auto const& f : files) {
        corpus.push_back(read_file(f));
    }
    if (corpus.empty()) {
        std::fprintf(stderr, "no corpus files in %s\n", argv[1]);
        return 2;
    }
    for (auto const& c : corpus) {
        LLVMFuzzerTestOneInput(c.data(), c.size());
    }
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < mutations; ++i) {
        auto const in = mutate(corpus[static_cast<std::size_t>(rng() % corpus.size())], corpus, rng);
        LLVMFuzzerTestOneInput(in.data(), in.size());
    }
    std::printf("%zu corpus inputs and %zu mutations (seed %llu) passed\n", corpus.size(), mutations,
                static_cast<unsigned long long>(seed));
    return 0;
}
