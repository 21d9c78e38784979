// ddpm_inspect: tools for users cross-checking ddpm against other implementations. Each group
// of subcommands registers itself on the CLI11 app; handlers throw on bad input, main() reports.
#pragma once
#include <CLI/CLI.hpp>

namespace ddpm::inspect {

void add_diffusion_commands(CLI::App& app);  // schedule, losses
void add_unet_commands(CLI::App& app);       // unet, unet-forward

}  // namespace ddpm::inspect
