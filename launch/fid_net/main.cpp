// ddpm_fid_net: trains the domain feature network (evaluation/domain_net.h) on a labelled HDF5
// dataset made by ddpm_prepare, reports its test accuracy, and saves it for
// make_domain_extractor. The training loop is a tool's job, so it lives here, not in the library.
#include <ATen/ATen.h>
#include <CLI/CLI.hpp>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/optim/adam.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <stdexcept>

#include "ddpm/data/dataset.h"
#include "ddpm/data/reader.h"
#include "ddpm/evaluation/domain_net.h"

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Args {
  std::string data, test, out;
  int epochs = 1;
  int64_t batch_size = 128, width = 16;
  double lr = 3e-3, max_seconds = 0;
  uint64_t seed = 0;
};

ddpm::data::DatasetInfo check_labelled(const std::string& path, const char* flag) {
  const auto info = ddpm::data::ImageDataset::open(path).info();
  if (!info.has_labels || info.num_classes < 2) {
    throw std::runtime_error(std::string(flag) + " " + path + ": the dataset has no /labels (num_classes " +
                             std::to_string(info.num_classes) + "); a classifier needs labelled data: run " +
                             "ddpm_prepare on images with labels (IDX labels file, .npz with labels, class folders)");
  }
  return info;
}

// Fraction of the test set classified correctly, in batches of 1000.
double test_accuracy(ddpm::evaluation::DomainNetImpl& net, const std::string& path) {
  const auto ds = ddpm::data::ImageDataset::open(path);
  const at::Tensor labels = ds.labels();  // (N)
  const int64_t n = ds.info().count;
  at::NoGradGuard no_grad;
  net.eval();
  int64_t correct = 0;
  for (int64_t s = 0; s < n; s += 1000) {
    const int64_t b = std::min<int64_t>(1000, n - s);
    const at::Tensor x = ds.read_images(s, b).permute({0, 3, 1, 2}).to(at::kFloat) / 255;  // (b, C, H, W)
    correct += (net.forward(x).argmax(1) == labels.slice(0, s, s + b)).sum().item<int64_t>();
  }
  net.train();
  return static_cast<double>(correct) / static_cast<double>(n);
}

void train(const Args& a) {
  const auto tr = check_labelled(a.data, "--data");
  const auto te = check_labelled(a.test, "--test");
  if (tr.channels != te.channels || tr.num_classes != te.num_classes) {
    throw std::runtime_error("--data " + a.data + " has " + std::to_string(tr.channels) + " channels, " +
                             std::to_string(tr.num_classes) + " classes but --test " + a.test + " has " +
                             std::to_string(te.channels) + ", " + std::to_string(te.num_classes) +
                             ": give a test set converted from the same dataset");
  }
  if (tr.height < 16 || tr.width < 16) throw std::runtime_error("--data " + a.data + ": images must be at least 16x16");
  at::manual_seed(a.seed);
  ddpm::evaluation::DomainNet net(ddpm::evaluation::DomainNetOptions{tr.channels, tr.num_classes, a.width, 128});
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(a.lr));
  ddpm::data::ReaderOptions ro;
  ro.global_batch = a.batch_size;
  ro.seed = a.seed;
  ro.random_flip = false;
  ddpm::data::ShardedReader reader(a.data, ro);
  const int64_t steps = reader.steps_per_epoch(), every = std::max<int64_t>(1, steps / 10);
  std::printf("training DomainNet (width %lld, %lld classes) on %s: %lld images, %d epoch(s) of %lld steps at batch %lld\n",
              (long long)a.width, (long long)tr.num_classes, a.data.c_str(), (long long)tr.count, a.epochs,
              (long long)steps, (long long)a.batch_size);
  const auto t0 = Clock::now();
  int64_t seen = 0, step = 0;
  const int64_t total_steps = steps * a.epochs;
  bool stop = false;
  for (int e = 0; e < a.epochs && !stop; ++e) {
    int64_t k = 0;
    while (auto b = reader.next_in_epoch()) {
      const at::Tensor x = (b->images + 1) / 2;  // (B, C, H, W) in [0, 1]
      // Learning rate decays linearly from --lr to 0 over the run (a few % of accuracy for free).
      static_cast<torch::optim::AdamOptions&>(opt.param_groups()[0].options())
          .lr(a.lr * (1.0 - static_cast<double>(step++) / static_cast<double>(total_steps)));
      const at::Tensor loss = at::cross_entropy_loss(net->forward(x), b->labels);
      opt.zero_grad();
      loss.backward();
      opt.step();
      seen += x.size(0);
      if (++k % every == 0 || k == steps) {
        std::printf("epoch %d step %lld/%lld loss %.4f %.0f images/s\n", e + 1, (long long)k, (long long)steps,
                    loss.item<double>(), seen / seconds_since(t0));
        std::fflush(stdout);
      }
      if (a.max_seconds > 0 && seconds_since(t0) > a.max_seconds) {
        std::printf("stopping: --max-seconds %.0f reached\n", a.max_seconds);
        stop = true;
        break;
      }
    }
  }
  const double train_s = seconds_since(t0);
  const double acc = test_accuracy(*net, a.test);
  std::printf("trained on %lld images in %.1f s; test accuracy %.4f on %lld images of %s\n", (long long)seen, train_s,
              acc, (long long)te.count, a.test.c_str());
  ddpm::evaluation::save_domain_net(a.out, *net, acc);
  std::printf("saved %s (extractor name domain:%s)\n", a.out.c_str(),
              std::filesystem::path(a.out).filename().string().c_str());
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train the domain feature network for FID on a labelled HDF5 dataset (from ddpm_prepare)"};
  Args a;
  app.add_option("--data", a.data, "training HDF5 dataset with labels")->required()->check(CLI::ExistingFile);
  app.add_option("--test", a.test, "test HDF5 dataset with labels (accuracy is reported on it)")->required()->check(CLI::ExistingFile);
  app.add_option("--out", a.out, "output weights (torch.save dict; written to a temporary name, then renamed)")->required();
  app.add_option("--epochs", a.epochs, "passes over the training set")->check(CLI::PositiveNumber);
  app.add_option("--batch-size", a.batch_size, "images per step")->check(CLI::PositiveNumber);
  app.add_option("--lr", a.lr, "Adam learning rate at the start (decays linearly to 0)")->check(CLI::PositiveNumber);
  app.add_option("--width", a.width, "channels of the first conv (then 2x, 4x)")->check(CLI::PositiveNumber);
  app.add_option("--seed", a.seed, "seed of the initialisation and the data order");
  app.add_option("--max-seconds", a.max_seconds, "stop training after this many seconds (0: no limit)");
  CLI11_PARSE(app, argc, argv);
  try {
    train(a);
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
