// strata: the command-line entry point. Subcommands live one per file (cli/*_command.cpp).
#include <cstdio>
#include <iostream>

#include "offload/cli/command.h"

namespace strata::cli {

int report_error(const std::string& message) {
  std::fflush(stdout);
  std::cerr << "strata: " << message << "\n";
  return 1;
}

}  // namespace strata::cli

int main(int argc, char** argv) {
  CLI::App app{
      "Strata: run language models larger than GPU memory across VRAM, pinned host "
      "memory and the CPU"};
  app.require_subcommand(1);
  int exit_code = 0;
  strata::cli::add_info_command(app, &exit_code);
  strata::cli::add_tokenize_command(app, &exit_code);
  strata::cli::add_detokenize_command(app, &exit_code);
  strata::cli::add_synth_command(app, &exit_code);
  strata::cli::add_run_command(app, &exit_code);
  strata::cli::add_eval_command(app, &exit_code);
  strata::cli::add_perplexity_command(app, &exit_code);
  strata::cli::add_convert_command(app, &exit_code);
  strata::cli::add_plan_command(app, &exit_code);
  strata::cli::add_calibrate_command(app, &exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return exit_code;
}
