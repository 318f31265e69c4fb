//! RFC 6962 test vectors (the published data of transparency-dev/merkle `proof/verify_test.go`,
//! also used by certificate-transparency-go) run through the stored tree: leaves pushed through
//! [`Frontier`], hashes stored in SQLite, proofs read back through [`DbReader`].

use crate::tree::{self, DbReader, Frontier};
use rusqlite::Connection;
use tlog_tiles::{
    check_record, check_tree, prove_record, prove_tree, record_hash, tree_hash, Hash,
};

const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

const ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf number, 1-based as published; tree size; audit path)
const INCLUSION: &[(u64, u64, &[&str])] = &[
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        3,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        2,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (size1, size2, proof)
const CONSISTENCY: &[(u64, u64, &[&str])] = &[
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn h(s: &str) -> Hash {
    crate::parse_hash("vector", s).expect("vector hash")
}

/// A database holding the tree of the 8 vector leaves, stored as the writer stores it with
/// `batch` leaves per transaction (1: one row per record; 3: runs spanning records, the last one
/// partial; 8: one run).
fn stored_tree(batch: usize) -> Connection {
    let conn = Connection::open_in_memory().expect("sqlite");
    conn.execute_batch(tree::SCHEMA).expect("schema");
    let mut edge = Frontier::load(&conn).expect("empty edge");
    for (i, leaf) in LEAVES.iter().enumerate() {
        let data = hex::decode(leaf).expect("leaf hex");
        edge.push(i as i64 + 1, record_hash(&data));
        if (i + 1) % batch == 0 || i + 1 == LEAVES.len() {
            tree::store(&conn, &mut edge).expect("store");
        }
        assert_eq!(edge.root(), h(ROOTS[i]), "edge root of size {}", i + 1);
    }
    conn
}

/// Every storage layout the tests run the vectors through.
fn layouts() -> impl Iterator<Item = (usize, Connection)> {
    [1, 3, 8].into_iter().map(|b| (b, stored_tree(b)))
}

#[test]
fn roots_of_the_0_to_8_leaf_trees() {
    for (batch, conn) in layouts() {
        roots_of(batch, &conn);
    }
}

fn roots_of(batch: usize, conn: &Connection) {
    let r = DbReader(conn);
    assert_eq!(
        crate::hash_hex(&tree_hash(0, &r).expect("empty")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let mut builder = crate::RootBuilder::new();
    for (n, root) in ROOTS.iter().enumerate() {
        let size = n as u64 + 1;
        assert_eq!(
            tree_hash(size, &r).expect("root"),
            h(root),
            "stored root of size {size} ({batch} per batch)"
        );
        builder.push(record_hash(&hex::decode(LEAVES[n]).expect("hex")));
        assert_eq!(builder.root(), h(root), "recomputed root of size {size}");
    }
    // The edge reloaded from the database is the one the writer had.
    assert_eq!(Frontier::load(conn).expect("edge").root(), h(ROOTS[7]));
}

#[test]
fn published_inclusion_proofs() {
    for (batch, conn) in layouts() {
        inclusion_proofs(batch, &conn);
    }
}

fn inclusion_proofs(batch: usize, conn: &Connection) {
    let r = DbReader(conn);
    for &(leaf, size, path) in INCLUSION {
        let n = leaf - 1;
        let want: Vec<Hash> = path.iter().map(|s| h(s)).collect();
        let got = prove_record(size, n, &r).expect("proof");
        assert_eq!(
            got, want,
            "inclusion of leaf {leaf} in {size} ({batch} per batch)"
        );
        let leaf_hash = record_hash(&hex::decode(LEAVES[n as usize]).expect("hex"));
        let root = h(ROOTS[size as usize - 1]);
        check_record(&want, size, root, n, leaf_hash).expect("published proof verifies");
        // Any flipped bit, a wrong index or a wrong root fails.
        for i in 0..want.len() {
            let mut bad = want.clone();
            bad[i].0[0] ^= 8;
            assert!(check_record(&bad, size, root, n, leaf_hash).is_err());
        }
        if size > 1 {
            assert!(check_record(&want, size, root, (n + 1) % size, leaf_hash).is_err());
        }
        assert!(check_record(&want, size, tlog_tiles::EMPTY_HASH, n, leaf_hash).is_err());
    }
}

#[test]
fn published_consistency_proofs() {
    for (batch, conn) in layouts() {
        consistency_proofs(batch, &conn);
    }
}

fn consistency_proofs(batch: usize, conn: &Connection) {
    let r = DbReader(conn);
    for &(m, size, path) in CONSISTENCY {
        let want: Vec<Hash> = path.iter().map(|s| h(s)).collect();
        let got = prove_tree(size, m, &r).expect("proof");
        assert_eq!(got, want, "consistency {m} -> {size} ({batch} per batch)");
        let (r1, r2) = (h(ROOTS[m as usize - 1]), h(ROOTS[size as usize - 1]));
        check_tree(&want, size, r2, m, r1).expect("published proof verifies");
        for i in 0..want.len() {
            let mut bad = want.clone();
            bad[i].0[0] ^= 16;
            assert!(check_tree(&bad, size, r2, m, r1).is_err());
        }
        if m != size {
            assert!(check_tree(&want, size, r1, m, r2).is_err(), "swapped roots");
            assert!(
                check_tree(&Vec::new(), size, r2, m, r1).is_err(),
                "empty proof"
            );
        }
    }
}
