# The cascade (ddpm_sample --cascade, trainer/superres.h) and ddpm_eval --fid-npz: the binaries on 1
# and 2 ranks against in-process super-resolution and the float64 numpy FID of fid_train_reference.py
# (whose tiny TorchScript extractor is the fixture golden_fid_train).
ddpm_add_test(superres_cascade SOURCES superres_test.cpp LIBS ddpm::trainer LABELS cpu mpi
              FIXTURES golden_fid_train TIMEOUT 300)
target_include_directories(test_superres_cascade PRIVATE ${PROJECT_SOURCE_DIR}/tests)
add_dependencies(test_superres_cascade ddpm_sample ddpm_eval)
