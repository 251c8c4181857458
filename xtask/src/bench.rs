//! placeholder replaced below.
pub(crate) fn run(_args: &[String]) -> Result<(), String> {
    Ok(())
}
