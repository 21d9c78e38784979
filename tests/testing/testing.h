// Test helpers: golden files written by tests/reference/*.py, comparisons that print the worst
// difference, and environment probes (GPU present, paths of the build).
#pragma once
#include <gtest/gtest.h>

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

#include "ddpm/data/h5_tensor.h"

namespace ddpm::testing {

// build/golden/NAME.h5, produced by the CTest fixture golden_NAME (see tests/CMakeLists.txt).
data::H5TensorFile golden(const std::string& name);

// Source and build folders (from the test's environment, set by ddpm_add_test).
std::string source_dir();
std::string binary_dir();
// A fresh empty folder under build/tmp/ for this test.
std::string temp_dir(const std::string& name);
// build/bin/NAME, a program of this build; and the command prefix that starts `np` ranks of one
// (mpiexec -np N --oversubscribe; the OpenMPI settings come from the test's environment).
std::string bin(const std::string& name);
std::string mpirun(int np);

// |actual - expected| <= atol + rtol * |expected| elementwise (compared in float64, same shape).
// Always prints "[maxdiff] label: abs A rel R (atol, rtol)" so logs show how close we are.
::testing::AssertionResult tensors_near(const at::Tensor& actual, const at::Tensor& expected,
                                    double rtol, double atol, const std::string& label);

// A module's state_dict (name -> tensor, in order) against a Python reference's golden entries:
// `keys` the names as newline-separated bytes, `shapes` (K, 4) int64 padded with -1. Fails on a
// different count, and names every key whose name or shape differs.
::testing::AssertionResult state_dict_matches_golden(const std::vector<std::pair<std::string, at::Tensor>>& sd,
                                                     const at::Tensor& keys, const at::Tensor& shapes);

bool cuda_available();

// The text of a file ("" when it cannot be read).
std::string read_text(const std::string& path);
// Runs `cmd` through the shell with stdout and stderr in `log`; returns its exit status (128 +
// signal when killed). With cpu_only the programs it starts see no GPU: tests that compare bytes
// across rank counts or against in-process CPU results run their binaries on the CPU, because GPU
// kernels (batch-size dependent algorithms) do not promise that.
int run_command(const std::string& cmd, const std::string& log, bool cpu_only);

}  // namespace ddpm::testing

// Skips the current test when no CUDA device is present (label `gpu` tests).
#define DDPM_REQUIRE_CUDA()                                             \
  do {                                                                  \
    if (!::ddpm::testing::cuda_available()) GTEST_SKIP() << "no CUDA device"; \
  } while (0)
