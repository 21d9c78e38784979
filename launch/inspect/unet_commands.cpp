// ddpm_inspect unet | unet-forward: the U-Net's size, FLOP and state_dict keys for a preset plus
// option flags, and a forward pass on HDF5 inputs with a weights file (torch.save format), to
// compare ddpm's network with another implementation number by number.
#include <ATen/ATen.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "ddpm/data/h5_tensor.h"
#include "ddpm/model/unet/state_dict.h"
#include "ddpm/model/unet/unet.h"
#include "inspect/commands.h"

namespace ddpm::inspect {
namespace {

// --preset plus one flag per UNetOptions field (--model-channels, --channel-mult 1,2,2, ...).
struct UNetFlags {
  std::string preset = "tiny";
  std::map<std::string, std::string> values;  // field -> text, only flags given

  void add_to(CLI::App* cmd) {
    cmd->add_option("--preset", preset, "U-Net preset: ddpm-cifar10, improved-cifar10, improved-imagenet64, "
                                        "fmnist-small, tiny")->capture_default_str();
    for (const auto& key : model::unet_option_keys()) {
      std::string flag = "--" + key;
      for (auto& c : flag) c = c == '_' ? '-' : c;
      cmd->add_option_function<std::string>(flag, [this, key](const std::string& v) { values[key] = v; },
                                            "override UNetOptions." + key + " of the preset");
    }
  }

  model::UNetOptions options() const {
    model::UNetOptions o = model::unet_preset(preset);
    for (const auto& [k, v] : values) model::set_unet_option(o, k, v);
    o.validate();
    return o;
  }
};

void print_unet(const UNetFlags& flags) {
  model::UNet net(flags.options());
  const auto& o = net->options();
  std::printf("preset %s\n%s", flags.preset.c_str(), model::describe(o).c_str());
  std::printf("parameters %lld\n", static_cast<long long>(net->num_parameters()));
  std::printf("forward GFLOP per %lldx%lld image %.4f (2 x multiply-adds of convolutions, linear layers and "
              "attention matmuls)\n",
              static_cast<long long>(o.image_size), static_cast<long long>(o.image_size),
              net->forward_flops(o.image_size, o.image_size) / 1e9);
  std::printf("state_dict\n");
  for (const auto& [name, t] : model::state_dict(*net)) {
    std::string shape = "(";
    for (int64_t i = 0; i < t.dim(); ++i) shape += (i ? ", " : "") + std::to_string(t.size(i));
    std::printf("  %s %s)\n", name.c_str(), shape.c_str());
  }
}

struct ForwardArgs {
  std::string weights, input, output;
};

void unet_forward(const UNetFlags& flags, const ForwardArgs& a) {
  model::UNet net(flags.options());
  model::load_unet_weights(net, a.weights);
  net->eval();
  const auto in = data::H5TensorFile::open_read(a.input);
  for (const char* name : {"x", "t"}) {
    if (!in.has(name)) {
      throw std::runtime_error(a.input + ": dataset '" + name + "' not found; expected float32 x (N,C,H,W), "
                               "int64 t (N) and optionally int64 y (N)");
    }
  }
  const at::Tensor x = in.read("x").to(at::kFloat), t = in.read("t").to(at::kLong);
  const at::Tensor y = in.has("y") ? in.read("y").to(at::kLong) : at::Tensor();
  at::NoGradGuard no_grad;
  const at::Tensor out = net->forward(x, t, y);  // (N, output_channels, H, W)
  data::H5TensorFile::create(a.output).write("out", out.to(at::kFloat).contiguous());
  std::printf("wrote out %lld x %lld x %lld x %lld to %s\n", static_cast<long long>(out.size(0)),
              static_cast<long long>(out.size(1)), static_cast<long long>(out.size(2)),
              static_cast<long long>(out.size(3)), a.output.c_str());
}

}  // namespace

void add_unet_commands(CLI::App& app) {
  auto info_flags = std::make_shared<UNetFlags>();
  auto* info = app.add_subcommand("unet", "print a U-Net's options, parameter count, forward GFLOP per image "
                                          "and state_dict keys with shapes");
  info_flags->add_to(info);
  info->callback([info_flags] { print_unet(*info_flags); });

  auto fwd_flags = std::make_shared<UNetFlags>();
  auto args = std::make_shared<ForwardArgs>();
  auto* fwd = app.add_subcommand("unet-forward", "run the U-Net (eval mode) on x, t[, y] from an HDF5 file with "
                                                 "weights from a torch.save file; writes float32 `out`");
  fwd_flags->add_to(fwd);
  fwd->add_option("--weights", args->weights, "state_dict file (torch.save of a dict of tensors)")->required();
  fwd->add_option("--input", args->input, "HDF5 with x (N,C,H,W) float32, t (N) int64, optional y (N) int64")
      ->required();
  fwd->add_option("--output", args->output, "HDF5 file to write `out` (N, C', H, W) float32 into")->required();
  fwd->callback([fwd_flags, args] { unet_forward(*fwd_flags, *args); });
}

}  // namespace ddpm::inspect
