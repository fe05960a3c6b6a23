//! What a peer sends on the overlay is decoded without panicking and only
//! canonical bytes decode: work requests and responses and gossiped offers,
//! from arbitrary bytes and from valid encodings with bytes changed.

use idlegrid_net::protocol::{decode_offer, decode_request, decode_response};
use idlegrid_net::{AssignedTask, Request, Response, ResultBatch, TaskBatch, TaskReturn};
use idlegrid_types::codec::{self, Bounded};
use idlegrid_types::{
    ContentId, ExecutionLimits, JobId, Keypair, Offer, Receipt, SignedReceipt, TaskInput,
    TaskOutcome, Voucher,
};
use proptest::collection::vec;
use proptest::prelude::*;

fn valid_messages() -> Vec<Vec<u8>> {
    let key = Keypair::from_seed([9; 32]);
    let job = JobId::from_bytes([3; 32]);
    let input =
        TaskInput::new(vec!["2000".to_owned(), "7".to_owned()], b"stdin".to_vec()).expect("input");
    let receipt = SignedReceipt::sign(
        &key,
        Receipt {
            job,
            task_index: 7,
            module: ContentId::of(b"module"),
            input: input.content_id(),
            outcome: TaskOutcome::Completed {
                exit_code: 0,
                output: ContentId::of(b"out"),
            },
            fuel_used: 1234,
            energy_millijoules: 567,
        },
    );
    let requests = [
        Request::Tasks(TaskBatch {
            job,
            module: ContentId::of(b"module"),
            module_holders: Bounded::new(Vec::new()).expect("none"),
            limits: ExecutionLimits {
                fuel: 1,
                memory_bytes: 2,
                output_bytes: 3,
            },
            wall_time_ms: 1000,
            price_per_million_fuel: 5,
            tasks: Bounded::new(vec![AssignedTask { index: 7, input }]).expect("one"),
        }),
        Request::Results(ResultBatch {
            job,
            results: Bounded::new(vec![
                TaskReturn::Ran {
                    receipt: receipt.clone(),
                    stdout: Bounded::new(b"out".to_vec()).expect("small"),
                },
                TaskReturn::Kept {
                    receipt,
                    bytes: 64 << 20,
                },
                TaskReturn::NotRun {
                    index: 8,
                    reason: Bounded::new("host".to_owned()).expect("small"),
                },
            ])
            .expect("two"),
        }),
        Request::Voucher(key.sign(Voucher {
            job,
            provider: key.account_id(),
            cumulative_amount: 10,
            cumulative_fuel: 20,
            sequence: 1,
        })),
        Request::Cancel {
            job,
            tasks: Bounded::new(vec![1, 2, 3]).expect("three"),
        },
        Request::JobDone { job },
        Request::Content {
            cid: ContentId::of(b"module"),
            offset: 4,
        },
        Request::Offer,
        Request::NewestVoucher { job },
        Request::ContentTree {
            cid: ContentId::of(b"module"),
            from: 32_768,
        },
    ];
    let voucher = key.sign(Voucher {
        job,
        provider: key.account_id(),
        cumulative_amount: 30,
        cumulative_fuel: 40,
        sequence: 2,
    });
    let responses = [
        Response::Ok,
        Response::Voucher {
            voucher: Box::new(voucher),
            job_done: true,
        },
        Response::refused("busy", "later"),
        Response::Content {
            total_bytes: 10,
            bytes: Bounded::new(vec![1, 2, 3]).expect("small"),
        },
        Response::ContentTree {
            total_bytes: 200_000,
            leaves: Bounded::new(vec![[7; 32]; 4]).expect("small"),
        },
    ];
    let offer = key.sign(Offer {
        cores: 2,
        memory_bytes: 1 << 30,
        gpu: None,
        benchmark_fuel_per_second: 100,
        price_floor_per_million_fuel: 1,
        concurrency: 4,
        idle_only: true,
        operator: Some(key.account_id()),
        sequence: 1,
        expires_at_ms: 2,
    });
    let mut all: Vec<Vec<u8>> = requests
        .iter()
        .map(|request| codec::encode(request).expect("encodes"))
        .collect();
    all.extend(
        responses
            .iter()
            .map(|response| codec::encode(response).expect("encodes")),
    );
    all.push(codec::encode(&offer).expect("encodes"));
    all.push(codec::encode(&Response::Offer(Box::new(offer))).expect("encodes"));
    all
}

fn decodes_canonically(bytes: &[u8]) {
    if let Ok(request) = decode_request(bytes) {
        assert_eq!(codec::encode(&request).expect("encodes"), bytes);
    }
    if let Ok(response) = decode_response(bytes) {
        assert_eq!(codec::encode(&response).expect("encodes"), bytes);
    }
    if let Ok(offer) = decode_offer(bytes) {
        assert_eq!(codec::encode(&offer).expect("encodes"), bytes);
    }
}

#[test]
fn every_valid_message_round_trips() {
    for bytes in valid_messages() {
        let decoded = decode_request(&bytes).is_ok()
            || decode_response(&bytes).is_ok()
            || decode_offer(&bytes).is_ok();
        assert!(decoded);
        decodes_canonically(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in vec(any::<u8>(), 0..2048)) {
        decodes_canonically(&bytes);
    }

    #[test]
    fn changed_bytes_of_a_valid_message_decode_canonically_or_not_at_all(
        which in any::<prop::sample::Index>(),
        changes in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let messages = valid_messages();
        let mut bytes = messages[which.index(messages.len())].clone();
        for (position, value) in changes {
            let position = position.index(bytes.len());
            bytes[position] = value;
        }
        decodes_canonically(&bytes);
        let cut = cut.index(bytes.len());
        decodes_canonically(&bytes[..cut]);
    }
}
