# Tests of sampling and evaluation (ddpm_sample, ddpm_eval, trainer/inference.h): the binaries are
# run on 1 and 2 ranks through mpirun from inside the test.
ddpm_add_test(sample_eval SOURCES sample_eval_test.cpp LIBS ddpm::trainer LABELS cpu mpi TIMEOUT 300)
target_include_directories(test_sample_eval PRIVATE ${PROJECT_SOURCE_DIR}/tests)
add_dependencies(test_sample_eval ddpm_sample ddpm_eval)
