// strata: the command-line entry point. Subcommands live one per file (cli/*_command.cpp).
int main(int argc, char** argv) { return 0; }
