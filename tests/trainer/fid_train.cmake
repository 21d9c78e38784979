# FID during training and ddpm_eval --fid (evaluation/fid_eval.h through trainer/fid_sampling.h): a
# 2-rank ddpm_train with --fid-every against 1-rank ddpm_eval --fid and a float64 numpy FID (fid_train_reference.py,
# which also writes the tiny TorchScript extractor as the fixture golden_fid_train).
ddpm_add_reference(fid_train fid_train_reference.py --module ${PROJECT_BINARY_DIR}/golden/fid_train_extractor.pt)
ddpm_add_test(fid_train SOURCES fid_train_test.cpp $<TARGET_OBJECTS:ddpm_loop_fixtures>
              LIBS ddpm::trainer LABELS cpu mpi FIXTURES golden_fid_train TIMEOUT 300)
target_include_directories(test_fid_train PRIVATE ${PROJECT_SOURCE_DIR}/tests)
add_dependencies(test_fid_train ddpm_train ddpm_eval ddpm_sample)
