# Warning flags live on an interface target so that each project target opts in
# (third-party headers come in as SYSTEM includes and stay quiet).
add_library(ckb_warnings INTERFACE)
target_compile_options(ckb_warnings INTERFACE
  -Wall -Wextra -Wpedantic $<$<CXX_COMPILER_ID:GNU>:-Wshadow=local> -Wnon-virtual-dtor -Wcast-align
  -Woverloaded-virtual -Wimplicit-fallthrough
  $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>)
if(CKB_WERROR)
  target_compile_options(ckb_warnings INTERFACE -Werror)
endif()
add_library(ckb::warnings ALIAS ckb_warnings)

# ckb_module(<name> SOURCES ... DEPS ...) : one library per module folder.
function(ckb_module name)
  cmake_parse_arguments(M "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(ckb_${name} STATIC ${M_SOURCES})
  add_library(ckb::${name} ALIAS ckb_${name})
  target_include_directories(ckb_${name} PUBLIC "${PROJECT_SOURCE_DIR}")
  target_link_libraries(ckb_${name} PUBLIC ${M_PUBLIC_DEPS} PRIVATE ckb::warnings ${M_PRIVATE_DEPS})
endfunction()
