// ddpm_inspect schedule | losses (issue: diffusion core). Filled in with the diffusion core.
#include "inspect/commands.h"

namespace ddpm::inspect {
void add_diffusion_commands(CLI::App& app) {}
}  // namespace ddpm::inspect
