use clap::Parser;
use ringmq_load::opts::{Cli, Scenario};

fn main() {
    let cli = Cli::parse();
    let code = match &cli.scenario {
        Scenario::Sink(a) => match ringmq_load::sink::run_sink(&a.listen, a.duration) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("sink: {e}");
                1
            }
        },
        _ => match ringmq_load::run::run(&cli.scenario) {
            Ok(r) => r.exit_code,
            Err(e) => {
                eprintln!("ringmq-load: {e}");
                1
            }
        },
    };
    std::process::exit(code);
}
