// Subcommands of the `strata` binary. Each lives in its own file (<name>_command.cpp) and adds
// itself to the CLI11 app; when the user picks it, its callback runs and stores the process exit
// code in *exit_code (0 on success; on failure it prints one clear line to stderr first).
#pragma once

#include <CLI/CLI.hpp>

namespace strata::cli {

void add_info_command(CLI::App& app, int* exit_code);
void add_tokenize_command(CLI::App& app, int* exit_code);
void add_detokenize_command(CLI::App& app, int* exit_code);
void add_synth_command(CLI::App& app, int* exit_code);
void add_run_command(CLI::App& app, int* exit_code);
void add_eval_command(CLI::App& app, int* exit_code);
void add_perplexity_command(CLI::App& app, int* exit_code);
void add_convert_command(CLI::App& app, int* exit_code);
void add_plan_command(CLI::App& app, int* exit_code);
void add_calibrate_command(CLI::App& app, int* exit_code);

// Prints "strata: <message>" to stderr and returns the exit code for a failed command.
int report_error(const std::string& message);

}  // namespace strata::cli
