# ddpm_bench_allreduce: all-reduce time and bus bandwidth against message size (dist/).
if(DDPM_BUILD_BENCH)
  find_package(CLI11 CONFIG REQUIRED)
  ddpm_add_executable(ddpm_bench_allreduce SOURCES ${CMAKE_CURRENT_LIST_DIR}/allreduce_bench.cpp
                      LIBS ddpm::dist CLI11::CLI11)
endif()
# ddpm_bench_overlap: exposed (not overlapped) gradient communication per step, per U-Net preset.
if(DDPM_BUILD_BENCH)
  ddpm_add_executable(ddpm_bench_overlap SOURCES ${CMAKE_CURRENT_LIST_DIR}/overlap_bench.cpp
                      LIBS ddpm::dist ddpm::model CLI11::CLI11)
endif()
