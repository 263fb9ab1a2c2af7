# The fuzz harnesses in the ordinary test build (included from
# tests/CMakeLists.txt): each one linked with replay_main.cpp instead of
# libFuzzer and run by ctest on its seed corpus plus 20,000 mutations of a
# fixed seed (label `unit;fuzz`, a few seconds each). The real fuzzing, with
# libFuzzer and sanitizers, is scripts/fuzz.sh (the `fuzz` preset).
set(CKB_FUZZ_DIR "${CMAKE_CURRENT_LIST_DIR}")
function(ckb_fuzz_replay name harness corpus)
  add_executable(fuzz_replay_${name} "${CKB_FUZZ_DIR}/${harness}" "${CKB_FUZZ_DIR}/replay_main.cpp")
  target_link_libraries(fuzz_replay_${name} PRIVATE ckb::couch ckb::warnings)
  add_test(NAME fuzz.replay_${name}
    COMMAND fuzz_replay_${name} "${PROJECT_SOURCE_DIR}/tests/data/couch/${corpus}" 20000 14)
  set_tests_properties(fuzz.replay_${name} PROPERTIES LABELS "unit;fuzz" TIMEOUT 120)
endfunction()
ckb_fuzz_replay(changes_parser changes_parser_fuzz.cpp fuzz-corpus)
ckb_fuzz_replay(shard_seq shard_seq_fuzz.cpp shard-seq-corpus)
ckb_fuzz_replay(db_updates db_updates_fuzz.cpp db-updates-corpus)
ckb_fuzz_replay(all_dbs all_dbs_fuzz.cpp all-dbs-corpus)
