//! Checks a Parquet file's declared sizes before polars decodes it (every reader of Parquet input
//! calls [`check`] first, inside [`super::guard`]). polars-parquet 0.55 trusts page
//! headers: a negative `num_values` (an i32) becomes a usize near 2^64 and the decoder reserves 2^61
//! bytes, which aborts the process (an allocation failure cannot be caught). Every row count, value
//! count and page size is checked here against the file's own totals and a bound first.
use std::io::Cursor;
use std::path::Path;

use anyhow::{ensure, Context};
use polars_parquet::parquet::page::CompressedPage;
use polars_parquet::parquet::read::{get_page_iterator, read_metadata};

/// The most cells (rows x columns) a logits table may declare.
const MAX_CELLS: usize = 1 << 31;
/// The largest page, compressed or not.
const MAX_PAGE: usize = 256 << 20;

pub fn check(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let bad = |what: String| format!("{}: not a readable Parquet file ({what})", path.display());
    let meta = read_metadata(&mut Cursor::new(bytes)).map_err(|e| anyhow::anyhow!(bad(e.to_string())))?;
    let rows = meta.num_rows;
    let columns = meta.schema_descr.columns().len();
    ensure!(
        rows.checked_mul(columns.max(1)).is_some_and(|c| c <= MAX_CELLS),
        bad(format!("it declares {rows} rows of {columns} columns"))
    );
    // One shared buffer (reference-counted) for the page readers of every column chunk.
    let buffer = polars_buffer::Buffer::from(bytes.to_vec());
    let mut counted = 0usize;
    for (g, rg) in meta.row_groups.iter().enumerate() {
        let group_rows = rg.num_rows();
        counted = counted.checked_add(group_rows).context(bad("row counts overflow".into()))?;
        ensure!(counted <= rows, bad(format!("row group {g} goes past the file's {rows} rows")));
        for col in rg.parquet_columns() {
            let declared = col.num_values();
            ensure!(
                declared >= 0 && declared as usize <= group_rows,
                bad(format!("a column of row group {g} declares {declared} values for {group_rows} rows"))
            );
            let pages = get_page_iterator(col, Cursor::new(buffer.clone()), vec![], MAX_PAGE)
                .map_err(|e| anyhow::anyhow!(bad(e.to_string())))?;
            for page in pages {
                match page.map_err(|e| anyhow::anyhow!(bad(e.to_string())))? {
                    CompressedPage::Data(p) => {
                        ensure!(
                            p.num_values() <= group_rows && p.uncompressed_size() <= MAX_PAGE,
                            bad(format!(
                                "a page of row group {g} declares {} values ({} bytes) for {group_rows} rows",
                                p.num_values() as i64,
                                p.uncompressed_size()
                            ))
                        );
                    }
                    // Dictionary pages: their compressed size is bounded by MAX_PAGE in the page reader,
                    // their value count is converted with a checked conversion by polars.
                    CompressedPage::Dict(_) => {}
                }
            }
        }
    }
    Ok(())
}
