//! `segmenter`: the background-removal server binary (see the crate README).

fn main() -> std::process::ExitCode {
    imagejobs_segmenter::main_entry()
}
