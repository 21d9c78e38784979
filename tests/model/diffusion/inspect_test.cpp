// ddpm_inspect schedule | losses end to end: runs build/bin/ddpm_inspect, compares its CSV and
// HDF5 output with tests/reference/diffusion_reference.py, and checks the bad-input messages.
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "diffusion_golden.h"

namespace ddpm::diffusion::testing {
namespace {

struct RunResult {
  int rc;
  std::string out, err;
};

RunResult inspect(const std::string& args, const std::string& dir) {
  const std::string bin = ddpm::testing::binary_dir() + "/bin/ddpm_inspect";
  const std::string cmd = bin + " " + args + " > " + dir + "/stdout.txt 2> " + dir + "/stderr.txt";
  const int status = std::system(cmd.c_str());
  const auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(dir + "/stdout.txt"), slurp(dir + "/stderr.txt")};
}

class Inspect : public DiffusionGolden {
 protected:
  std::string dir = ddpm::testing::temp_dir("diffusion_inspect");

  // The core case of the reference as the float32 / int64 input file of `losses`.
  std::string write_input(const std::string& name, const at::Tensor& out, const at::Tensor& noise) {
    const std::string path = dir + "/" + name;
    data::H5TensorFile f = data::H5TensorFile::create(path);
    f.write("x_start", r("x_start").to(at::kFloat));
    f.write("noise", noise.to(at::kFloat));
    f.write("t", r("t"));
    f.write("model_output", out.to(at::kFloat));
    return path;
  }
};

TEST_F(Inspect, ScheduleCsv) {
  const RunResult run = inspect("schedule --schedule cosine --steps 50", dir);
  ASSERT_EQ(run.rc, 0) << run.err;
  std::istringstream in(run.out);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "t,beta,alphas_cumprod,alphas_cumprod_prev,posterior_variance,posterior_log_variance_clipped,"
                  "posterior_mean_coef1,posterior_mean_coef2");
  const char* cols[] = {"betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
                        "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"};
  at::Tensor table = at::zeros({50, 7}, at::kDouble);
  int64_t rows = 0;
  for (; std::getline(in, line); ++rows) {
    ASSERT_LT(rows, 50);
    std::istringstream cells(line);
    std::string cell;
    std::getline(cells, cell, ',');
    EXPECT_EQ(std::stoll(cell), rows);
    for (int c = 0; c < 7 && std::getline(cells, cell, ','); ++c) table[rows][c] = std::stod(cell);
  }
  EXPECT_EQ(rows, 50);
  // %.17g round-trips a double exactly.
  for (int c = 0; c < 7; ++c) {
    EXPECT_TRUE(tensors_near(table.select(1, c), r(std::string("sched.cosine.50.") + cols[c]), kRtol64, 0.0,
                             std::string("csv ") + cols[c]));
  }
}

TEST_F(Inspect, LossesHybrid) {
  const std::string in = write_input("hybrid_in.h5", r("out2"), r("noise"));
  const RunResult run = inspect("losses --input " + in + " --output " + dir + "/hybrid_out.h5 --schedule linear"
                                " --steps 100 --mean-type eps --var-type learned-range --loss-type rescaled-mse", dir);
  ASSERT_EQ(run.rc, 0) << run.err;
  const data::H5TensorFile out = data::H5TensorFile::open_read(dir + "/hybrid_out.h5");
  const std::string p = "tl.eps.learned-range.rescaled-mse.";
  for (const char* n : {"loss", "mse", "vb"}) {
    EXPECT_EQ(out.read(n).scalar_type(), at::kDouble) << n;
    EXPECT_TRUE(tensors_near(out.read(n), r(p + n), kRtol64, kAtol64, std::string("inspect ") + n));
  }
  for (const char* n : {"mean", "log_variance"}) {
    EXPECT_TRUE(tensors_near(out.read(std::string("model_") + n), r(std::string("pmv.eps.learned-range.0.") + n),
                             kRtol64, kAtol64, std::string("inspect model_") + n));
  }
  EXPECT_TRUE(tensors_near(out.read("x_t"), r("x_t"), kRtol64, kAtol64, "inspect x_t"));
}

TEST_F(Inspect, LossesKlHasOnlyLoss) {
  const std::string in = write_input("kl_in.h5", r("out1"), r("noise"));
  const RunResult run = inspect("losses --input " + in + " --output " + dir + "/kl_out.h5 --steps 100 --mean-type x0"
                          " --var-type fixed-large --loss-type rescaled-kl", dir);
  ASSERT_EQ(run.rc, 0) << run.err;
  const data::H5TensorFile out = data::H5TensorFile::open_read(dir + "/kl_out.h5");
  EXPECT_TRUE(tensors_near(out.read("loss"), r("tl.x0.fixed-large.rescaled-kl.loss"), kRtol64, kAtol64, "inspect kl"));
  EXPECT_FALSE(out.has("mse"));
  EXPECT_FALSE(out.has("vb"));
}

TEST_F(Inspect, BadInputsNameTheDatasetAndShapes) {
  const std::string common = " --steps 100 --mean-type eps --var-type learned-range --loss-type mse";
  const std::string noise_in = write_input("bad_noise.h5", r("out2"), r("noise").narrow(3, 0, 2));
  RunResult run = inspect("losses --input " + noise_in + " --output " + dir + "/o.h5" + common, dir);
  EXPECT_EQ(run.rc, 1);
  EXPECT_TRUE(contains(run.err, "dataset 'noise' has shape [8, 2, 3, 2], expected [8, 2, 3, 3]"));

  const std::string out_in = write_input("bad_output.h5", r("out1"), r("noise"));
  run = inspect("losses --input " + out_in + " --output " + dir + "/o.h5" + common, dir);
  EXPECT_EQ(run.rc, 1);
  EXPECT_TRUE(contains(run.err, "dataset 'model_output' has shape [8, 2, 3, 3], expected [8, 4, 3, 3]"));

  run = inspect("losses --input " + out_in + " --output " + dir + "/o.h5 --steps 50 --var-type fixed-small", dir);
  EXPECT_EQ(run.rc, 1);
  EXPECT_TRUE(contains(run.err, "dataset 't' has values in [0, 99], expected [0, 49] for 50 steps"));

  run = inspect("losses --input " + out_in + " --output " + dir + "/o.h5 --steps 100 --mean-type epsilon", dir);
  EXPECT_EQ(run.rc, 1);
  EXPECT_TRUE(contains(run.err, "unknown mean type 'epsilon'"));

  {
    data::H5TensorFile f = data::H5TensorFile::create(dir + "/no_t.h5");
    f.write("x_start", r("x_start").to(at::kFloat));
    f.write("noise", r("noise").to(at::kFloat));
  }
  run = inspect("losses --input " + dir + "/no_t.h5 --output " + dir + "/o.h5 --steps 100", dir);
  EXPECT_EQ(run.rc, 1);
  EXPECT_TRUE(contains(run.err, "dataset 't' is missing"));
}

}  // namespace
}  // namespace ddpm::diffusion::testing
