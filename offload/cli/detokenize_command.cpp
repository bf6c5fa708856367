#include "offload/cli/command.h"

namespace strata::cli {

// Placeholder registration until the command lands; prints a clear error if used.
void add_detokenize_command(CLI::App& app, int* exit_code) {
  app.add_subcommand("detokenize", "(not available in this build yet)")->callback([exit_code] {
    *exit_code = report_error("'detokenize' is not available in this build yet");
  });
}

}  // namespace strata::cli
