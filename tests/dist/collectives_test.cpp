// Collectives of the MPI and single-process communicators on inputs every rank can rebuild from
// (seed, rank): odd sizes, empty tensors, several dtypes, non-contiguous views, variable-size
// all-gather; then parameter broadcast and the identical-replicas check.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "ddpm/dist/check.h"
#include "ddpm/dist/context.h"
#include "ddpm/dist/module_sync.h"
#include "ddpm/dist/mpi_communicator.h"
#include "dist/dist_test_env.h"
#include "testing/testing.h"

namespace {

using ddpm::dist::ReduceOp;
using ddpm::dist::testing::comm;

// Integers in a range whose sum over 4 ranks is exact in every dtype tested.
at::Tensor rank_input(int64_t seed, int rank, std::vector<int64_t> shape, at::ScalarType dtype) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed * 1000 + rank));
  const bool small = dtype == at::kByte || dtype == at::kChar;
  return at::randint(small ? 0 : -50, small ? 30 : 50, shape, gen, at::TensorOptions(at::kLong)).to(dtype);
}

at::Tensor sum_over_ranks(int64_t seed, std::vector<int64_t> shape, at::ScalarType dtype) {
  at::Tensor s = at::zeros(shape, at::kDouble);
  for (int r = 0; r < comm().world_size(); ++r) s += rank_input(seed, r, shape, dtype).to(at::kDouble);
  return s;
}

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kDouble, at::kInt, at::kLong,
                                             at::kByte, at::kChar, at::kHalf, at::kBFloat16};
const std::vector<int64_t> kSizes = {0, 1, 7, 1023, 65537};

TEST(Collectives, AllReduceSumEveryDtypeAndOddSizes) {
  int64_t seed = 1;
  for (auto dtype : kDtypes) {
    for (int64_t n : kSizes) {
      ++seed;
      at::Tensor x = rank_input(seed, comm().rank(), {n}, dtype);
      comm().all_reduce(x, ReduceOp::kSum);
      EXPECT_EQ(x.scalar_type(), dtype);
      EXPECT_TRUE(ddpm::testing::tensors_near(x.to(at::kDouble), sum_over_ranks(seed, {n}, dtype), 0, 0,
                                              std::string("sum ") + c10::toString(dtype) + " n=" + std::to_string(n)));
    }
  }
}

TEST(Collectives, AllReduceAverageAndNonContiguous) {
  at::Tensor x = rank_input(7, comm().rank(), {5, 7}, at::kFloat).t();  // (7, 5) view
  ASSERT_FALSE(x.is_contiguous());
  comm().all_reduce(x, ReduceOp::kAvg);
  const at::Tensor expected = sum_over_ranks(7, {5, 7}, at::kFloat).t() / comm().world_size();
  EXPECT_TRUE(ddpm::testing::tensors_near(x, expected, 1e-6, 1e-6, "avg of a transposed view"));
  at::Tensor i = at::ones({3}, at::kInt);
  EXPECT_THROW(comm().all_reduce(i, ReduceOp::kAvg), c10::Error);
}

TEST(Collectives, AsyncAllReducesInFlightTogether) {
  std::vector<at::Tensor> xs;
  std::vector<std::shared_ptr<ddpm::dist::Work>> works;
  for (int k = 0; k < 3; ++k) {
    xs.push_back(rank_input(20 + k, comm().rank(), {1000 + 17 * k}, at::kDouble));
    works.push_back(comm().all_reduce_async(xs.back(), ReduceOp::kSum));
  }
  for (int k = 2; k >= 0; --k) {  // waiting out of order is fine
    works[k]->wait();
    EXPECT_TRUE(works[k]->test());
    EXPECT_TRUE(ddpm::testing::tensors_near(xs[k], sum_over_ranks(20 + k, {1000 + 17 * k}, at::kDouble), 0, 0,
                                            "async #" + std::to_string(k)));
  }
}

TEST(Collectives, AllReduceListCoalescesMixedDtypes) {
  std::vector<at::Tensor> xs = {rank_input(30, comm().rank(), {3, 4}, at::kFloat),
                                rank_input(31, comm().rank(), {5}, at::kLong),
                                rank_input(32, comm().rank(), {0}, at::kFloat),
                                rank_input(33, comm().rank(), {2, 2, 3}, at::kFloat)};
  comm().all_reduce(xs, ReduceOp::kSum);
  EXPECT_TRUE(ddpm::testing::tensors_near(xs[0], sum_over_ranks(30, {3, 4}, at::kFloat), 0, 0, "list[0]"));
  EXPECT_TRUE(ddpm::testing::tensors_near(xs[1], sum_over_ranks(31, {5}, at::kLong), 0, 0, "list[1]"));
  EXPECT_EQ(xs[2].numel(), 0);
  EXPECT_TRUE(ddpm::testing::tensors_near(xs[3], sum_over_ranks(33, {2, 2, 3}, at::kFloat), 0, 0, "list[3]"));
}

TEST(Collectives, BroadcastFromEveryRoot) {
  for (int root = 0; root < comm().world_size(); ++root) {
    for (auto dtype : {at::kFloat, at::kLong, at::kBFloat16}) {
      at::Tensor x = rank_input(40 + root, comm().rank(), {3, 5}, dtype);
      comm().broadcast(x, root);
      EXPECT_TRUE(x.equal(rank_input(40 + root, root, {3, 5}, dtype))) << "root " << root << " " << dtype;
    }
    at::Tensor empty = at::empty({0, 4});
    comm().broadcast(empty, root);
    EXPECT_EQ(empty.size(0), 0);
  }
}

TEST(Collectives, AllGatherEqualSizes) {
  const at::Tensor x = rank_input(50, comm().rank(), {4, 3}, at::kFloat);
  const at::Tensor all = comm().all_gather(x);  // (world, 4, 3)
  ASSERT_EQ(all.sizes(), (std::vector<int64_t>{comm().world_size(), 4, 3}));
  for (int r = 0; r < comm().world_size(); ++r)
    EXPECT_TRUE(all[r].equal(rank_input(50, r, {4, 3}, at::kFloat))) << "row of rank " << r;
  EXPECT_EQ(comm().all_gather(at::empty({0})).sizes(), (std::vector<int64_t>{comm().world_size(), 0}));
}

// The timestep sampler's case: each rank has a different number of (t, loss) pairs, rank 1 none.
int64_t rows_of(int r) { return r == 1 ? 0 : (r * 5 + 3) % 7 + 1; }

TEST(Collectives, AllGatherVariableSizes) {
  const int r0 = comm().rank();
  const at::Tensor pairs = rank_input(60, r0, {rows_of(r0), 2}, at::kDouble);  // (n_r, 2)
  const std::vector<at::Tensor> all = comm().all_gather_v(pairs);
  ASSERT_EQ(static_cast<int>(all.size()), comm().world_size());
  for (int r = 0; r < comm().world_size(); ++r) {
    EXPECT_EQ(all[r].size(0), rows_of(r));
    EXPECT_TRUE(all[r].equal(rank_input(60, r, {rows_of(r), 2}, at::kDouble))) << "rank " << r;
  }
  comm().barrier();
}

TEST(Collectives, SingleProcessIsIdentity) {
  ddpm::dist::SingleProcessCommunicator single;
  at::Tensor x = rank_input(70, 0, {9}, at::kFloat), before = x.clone();
  single.all_reduce(x, ReduceOp::kAvg);
  EXPECT_TRUE(x.equal(before));
  EXPECT_EQ(single.all_gather(x).sizes(), (std::vector<int64_t>{1, 9}));
  EXPECT_TRUE(single.all_gather_v(x)[0].equal(before));
  EXPECT_THROW(single.broadcast(x, 1), c10::Error);
}

TEST(ModuleSync, BroadcastMakesReplicasIdenticalAndCheckNamesFirstDifference) {
  torch::manual_seed(100 + comm().rank());  // a different init on every rank
  torch::nn::Sequential net(torch::nn::Linear(4, 3), torch::nn::Linear(3, 2));
  const auto state = ddpm::dist::module_state(*net);
  {  // only the second layer's bias differs: the check must name it
    torch::NoGradGuard no_grad;
    torch::manual_seed(100);
    torch::nn::Sequential ref(torch::nn::Linear(4, 3), torch::nn::Linear(3, 2));
    for (size_t i = 0; i + 1 < state.size(); ++i) state[i].second.copy_(ddpm::dist::module_state(*ref)[i].second);
  }
  auto diff = ddpm::dist::first_differing_tensor(comm(), state);
  if (comm().world_size() == 1) {
    EXPECT_FALSE(diff.has_value());
  } else {
    ASSERT_TRUE(diff.has_value());
    EXPECT_NE(diff->find("1.bias"), std::string::npos) << *diff;
    EXPECT_THROW(ddpm::dist::check_identical(comm(), state), ddpm::dist::DistError);
  }
  ddpm::dist::broadcast_module(comm(), *net, 0);
  EXPECT_FALSE(ddpm::dist::first_differing_tensor(comm(), state).has_value());
  torch::manual_seed(100);
  torch::nn::Sequential rank0(torch::nn::Linear(4, 3), torch::nn::Linear(3, 2));
  const auto expected = ddpm::dist::module_state(*rank0);
  for (size_t i = 0; i < state.size(); ++i)
    EXPECT_TRUE(state[i].second.equal(expected[i].second)) << state[i].first;
}

// MPI on CUDA tensors (ranks sharing a GPU): staged through host copies, results on the GPU.
TEST(Collectives, MpiStagesCudaTensorsThroughTheHost) {
  DDPM_REQUIRE_CUDA();
  ddpm::dist::MpiCommunicator mpi(MPI_COMM_WORLD);
  const at::Device dev(at::kCUDA, 0);
  at::Tensor x = rank_input(120, mpi.rank(), {1023}, at::kFloat).to(dev);
  mpi.all_reduce(x, ReduceOp::kSum);
  EXPECT_TRUE(x.is_cuda());
  EXPECT_TRUE(ddpm::testing::tensors_near(x.cpu().to(at::kDouble), sum_over_ranks(120, {1023}, at::kFloat), 0, 0,
                                          "mpi cuda sum"));
  at::Tensor h = rank_input(121, mpi.rank(), {65537}, at::kBFloat16).to(dev);
  mpi.all_reduce_async(h, ReduceOp::kSum)->wait();
  EXPECT_EQ(h.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(ddpm::testing::tensors_near(h.cpu().to(at::kDouble), sum_over_ranks(121, {65537}, at::kBFloat16), 0, 0,
                                          "mpi cuda async bf16 sum"));
  at::Tensor b = rank_input(122, mpi.rank(), {5, 7}, at::kFloat).to(dev).t();  // non-contiguous
  mpi.broadcast(b, 0);
  EXPECT_TRUE(b.cpu().equal(rank_input(122, 0, {5, 7}, at::kFloat).t()));
  const at::Tensor all = mpi.all_gather(rank_input(123, mpi.rank(), {3}, at::kLong).to(dev));
  EXPECT_TRUE(all.is_cuda());
  for (int r = 0; r < mpi.world_size(); ++r) EXPECT_TRUE(all[r].cpu().equal(rank_input(123, r, {3}, at::kLong)));
}

TEST(Check, MacroReportsLibraryStringRankAndHint) {
  try {
    DDPM_MPI_CHECK(MPI_Comm_rank(MPI_COMM_NULL, nullptr), "this is the hint");
    FAIL() << "expected DistError";
  } catch (const ddpm::dist::DistError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("MPI error in MPI_Comm_rank"), std::string::npos) << what;
    EXPECT_NE(what.find("collectives_test.cpp"), std::string::npos) << what;
    EXPECT_NE(what.find("rank " + std::to_string(comm().rank())), std::string::npos) << what;
    EXPECT_NE(what.find("this is the hint"), std::string::npos) << what;
  }
}

}  // namespace

// GPU sharing is decided by device identity (PCI bus id), exchanged on each host: one GPU visible
// per rank, a different one each (srun --gpus-per-task=1), is not sharing (NCCL can be used); the
// same identity on two ranks of a host is; unknown identities fall back to the count heuristic.
TEST(Context, SharingFollowsDeviceIdentity) {
  const int rank = ddpm::dist::testing::context().rank;
  const ddpm::dist::Context own = ddpm::dist::make_context(
      MPI_COMM_WORLD, 1, [rank](int device) { return "0000:" + std::to_string(10 + rank) + ":00." + std::to_string(device); });
  EXPECT_FALSE(own.shares_gpu);
  EXPECT_EQ(own.cuda_device, 0);
  const ddpm::dist::Context same =
      ddpm::dist::make_context(MPI_COMM_WORLD, 1, [](int) { return std::string("0000:1b:00.0"); });
  EXPECT_EQ(same.shares_gpu, same.local_size > 1);
  const ddpm::dist::Context unknown = ddpm::dist::make_context(MPI_COMM_WORLD, 1, [](int) { return std::string(); });
  EXPECT_EQ(unknown.shares_gpu, unknown.local_size > 1);  // more local ranks than visible GPUs
  const ddpm::dist::Context eight = ddpm::dist::make_context(
      MPI_COMM_WORLD, 8, [](int device) { return "0000:" + std::to_string(20 + device) + ":00.0"; });
  EXPECT_FALSE(eight.shares_gpu);  // local rank i takes GPU i of 8
  EXPECT_EQ(eight.cuda_device, eight.local_rank % 8);
  const ddpm::dist::Context cpu = ddpm::dist::make_context(MPI_COMM_WORLD, 0, ddpm::dist::cuda_pci_bus_id());
  EXPECT_FALSE(cpu.shares_gpu);
  EXPECT_EQ(cpu.cuda_device, -1);
}

// The NCCL path on CUDA tensors (label gpu semantics: skips without a GPU, or when ranks would
// share one GPU, which NCCL refuses).
#if DDPM_WITH_NCCL
#include <ATen/cuda/Sleep.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>

#include <chrono>
#include <mutex>
#include <thread>

#include "ddpm/dist/nccl_communicator.h"

namespace {
TEST(Nccl, AllReduceBroadcastAllGatherOnCuda) {
  DDPM_REQUIRE_CUDA();
  const auto& ctx = ddpm::dist::testing::context();
  if (ctx.shares_gpu) GTEST_SKIP() << "more local ranks than GPUs";
  ddpm::dist::NcclCommunicator nccl(MPI_COMM_WORLD, ctx.cuda_device);
  const at::Device dev = ctx.device();
  for (int64_t n : kSizes) {
    at::Tensor x = rank_input(80 + n, nccl.rank(), {n}, at::kFloat).to(dev);
    nccl.all_reduce(x, ReduceOp::kSum);
    EXPECT_TRUE(ddpm::testing::tensors_near(x.cpu(), sum_over_ranks(80 + n, {n}, at::kFloat).to(at::kFloat), 0, 0,
                                            "nccl sum n=" + std::to_string(n)));
  }
  at::Tensor b = rank_input(90, nccl.rank(), {3, 5}, at::kBFloat16).to(dev);
  nccl.broadcast(b, 0);
  EXPECT_TRUE(b.cpu().equal(rank_input(90, 0, {3, 5}, at::kBFloat16)));
  const auto all = nccl.all_gather_v(rank_input(91, nccl.rank(), {rows_of(nccl.rank()), 2}, at::kDouble).to(dev));
  for (int r = 0; r < nccl.world_size(); ++r)
    EXPECT_TRUE(all[r].cpu().equal(rank_input(91, r, {rows_of(r), 2}, at::kDouble))) << "rank " << r;
  nccl.barrier();
}

// --collective-timeout on NCCL (issue 11 item 7): an all-reduce queued behind a kernel that spins
// for ~4 s cannot complete; with a 1 s bound the watchdog reports it, naming the collective, while
// the host goes on (the report comes from the watchdog's thread, the host never blocks on it). The
// all-reduce still completes correctly once the kernel ends.
TEST(Nccl, WatchdogReportsAKernelThatDoesNotComplete) {
  DDPM_REQUIRE_CUDA();
  const auto& ctx = ddpm::dist::testing::context();
  if (ctx.shares_gpu) GTEST_SKIP() << "more local ranks than GPUs";
  ddpm::dist::NcclCommunicator nccl(MPI_COMM_WORLD, ctx.cuda_device);
  const at::Device dev = ctx.device();
  c10::cuda::CUDAGuard guard(dev);
  const int64_t calibration = 50'000'000;  // cycles of at::cuda::sleep, timed to scale to ~4 s
  const auto c0 = std::chrono::steady_clock::now();
  at::cuda::sleep(calibration);
  c10::cuda::device_synchronize();
  const double per_cycle = std::chrono::duration<double>(std::chrono::steady_clock::now() - c0).count() / calibration;
  std::mutex m;
  std::vector<std::string> fired;
  nccl.set_collective_timeout(1.0, [&](const std::string& msg) {
    std::lock_guard<std::mutex> lock(m);
    fired.push_back(msg);
  });
  const auto t0 = std::chrono::steady_clock::now();
  at::cuda::sleep(static_cast<int64_t>(4.0 / per_cycle));  // on torch's current stream
  at::Tensor x = at::ones({1024}, at::TensorOptions().device(dev));
  std::shared_ptr<ddpm::dist::Work> work = nccl.all_reduce_async(x, ReduceOp::kSum);  // waits for the sleep
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  {
    std::lock_guard<std::mutex> lock(m);
    ASSERT_EQ(fired.size(), 1u) << "the watchdog did not report the stuck NCCL all-reduce within 2.5 s";
    std::printf("[figure] NCCL all-reduce behind a 4 s kernel, --collective-timeout 1: reported after <= 2.5 s: %s\n",
                fired[0].c_str());
    EXPECT_NE(fired[0].find("NCCL all_reduce"), std::string::npos) << fired[0];
  }
  work->wait();
  c10::cuda::device_synchronize();
  const double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[figure] the kernel and the all-reduce ended after %.1f s\n", total);
  EXPECT_TRUE(x.cpu().eq(static_cast<float>(nccl.world_size())).all().item<bool>());
  nccl.set_collective_timeout(0, {});
}
}  // namespace
#endif
