#include "offload/cli/command.h"

namespace strata::cli {

// Placeholder registration until the command lands; prints a clear error if used.
void add_synth_command(CLI::App& app, int* exit_code) {
  app.add_subcommand("synth", "(not available in this build yet)")->callback([exit_code] {
    *exit_code = report_error("'synth' is not available in this build yet");
  });
}

}  // namespace strata::cli
