# Classifier guidance end to end (ddpm_sample --classifier on 1 and 2 ranks, errors) and
# ddpm_eval --fid-npz (domain accuracy of labelled samples), on tiny checkpoints built by the test.
ddpm_add_test(classifier_guidance SOURCES classifier_guidance_test.cpp LIBS ddpm::trainer LABELS cpu mpi TIMEOUT 300)
target_include_directories(test_classifier_guidance PRIVATE ${PROJECT_SOURCE_DIR}/tests)
add_dependencies(test_classifier_guidance ddpm_sample ddpm_eval)
