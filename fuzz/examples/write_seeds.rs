//! Writes the seed corpus: `cargo run --manifest-path fuzz/Cargo.toml --example write_seeds`.

use std::path::Path;

use idlegrid_fuzz::{Fixture, NoReExecution};
use idlegrid_types::codec;

fn main() -> std::io::Result<()> {
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/transaction");
    std::fs::create_dir_all(&directory)?;
    let fixture = Fixture::get();
    for (name, transaction) in fixture.seeds() {
        let outcome = fixture
            .ledger()
            .apply_block(
                2,
                idlegrid_fuzz::BLOCK_2_TIME_MS,
                std::slice::from_ref(&transaction),
                &NoReExecution,
            )
            .expect("the ledger applies a seed");
        match &outcome.transactions[0].outcome {
            Ok(_) => println!("seed-{name}: applies"),
            Err(rejection) => println!("seed-{name}: rejected ({})", rejection.code()),
        }
        let bytes = codec::encode(&transaction).expect("transactions encode");
        std::fs::write(directory.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
