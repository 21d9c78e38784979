// ddpm_inspect entry point: parses the subcommand, runs it, reports errors on stderr (exit 1).
#include <cstdio>
#include <exception>

#include "inspect/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"ddpm_inspect: print schedules, compute losses and run the U-Net on files, to compare "
               "ddpm with other implementations number by number"};
  app.require_subcommand(1);
  ddpm::inspect::add_diffusion_commands(app);
  ddpm::inspect::add_unet_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ddpm_inspect: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
