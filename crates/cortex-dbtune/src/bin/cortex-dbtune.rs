//! `cortex-dbtune`: PostgreSQL settings from resources (as pgtune) and EXPLAIN analysis.
//! The commands live in the library's `cli` module, where they are unit-tested.

fn main() -> std::process::ExitCode {
    cortex_dbtune::cli::main()
}
