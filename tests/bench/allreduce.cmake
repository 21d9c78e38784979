# ddpm_bench_allreduce: all-reduce time and bus bandwidth against message size (dist/).
if(DDPM_BUILD_BENCH)
  find_package(CLI11 CONFIG REQUIRED)
  ddpm_add_executable(ddpm_bench_allreduce SOURCES ${CMAKE_CURRENT_LIST_DIR}/allreduce_bench.cpp
                      LIBS ddpm::dist CLI11::CLI11)
endif()
