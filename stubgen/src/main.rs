//! `courier-stubgen`, the Rust build of the command (the Python wheel ships the
//! same code as the `courier-stubgen` console script).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (code, out, err) = courier_stubgen::cli::main_with_args(&args);
    print!("{out}");
    eprint!("{err}");
    std::process::exit(code);
}
