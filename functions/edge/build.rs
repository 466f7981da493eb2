//! Compiles the data-center list (`data/datacenter/hosting.txt`) into sorted,
//! merged ranges the edge searches as they are: nothing is parsed at start-up
//! (the text parse took about a millisecond, every cold start).

use std::fmt::Write as _;
use std::path::PathBuf;

#[path = "src/geo/netlist.rs"]
#[allow(dead_code)]
mod netlist;

const LIST: &str = "data/datacenter/hosting.txt";

fn main() {
    println!("cargo:rerun-if-changed={LIST}");
    println!("cargo:rerun-if-changed=src/geo/netlist.rs");
    let text = std::fs::read_to_string(LIST).unwrap_or_else(|e| panic!("reading {LIST}: {e}"));
    let list = netlist::NetList::parse(&text).unwrap_or_else(|e| panic!("{LIST}: {e}"));
    assert!(
        list.asns.is_empty(),
        "{LIST}: AS numbers need an ASN database; the compiled-in list holds networks only"
    );
    let mut out = String::with_capacity(list.v4.len() * 28 + list.v6.len() * 90);
    writeln!(
        out,
        "/// IPv4 ranges of `{LIST}`, sorted and merged.\n\
         pub static BUILTIN_V4: [(u32, u32); {}] = [",
        list.v4.len()
    )
    .unwrap();
    for (a, b) in &list.v4 {
        writeln!(out, "({a:#x},{b:#x}),").unwrap();
    }
    writeln!(
        out,
        "];\n/// IPv6 ranges of `{LIST}`, sorted and merged.\n\
         pub static BUILTIN_V6: [(u128, u128); {}] = [",
        list.v6.len()
    )
    .unwrap();
    for (a, b) in &list.v6 {
        writeln!(out, "({a:#x},{b:#x}),").unwrap();
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(dest.join("datacenter_ranges.rs"), out).expect("writing the ranges");
}
