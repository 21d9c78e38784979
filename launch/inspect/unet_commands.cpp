// ddpm_inspect unet | unet-forward (issue: the U-Net). Filled in with the U-Net.
#include "inspect/commands.h"

namespace ddpm::inspect {
void add_unet_commands(CLI::App& app) {}
}  // namespace ddpm::inspect
