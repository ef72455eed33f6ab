// placeholder until the sandbox helper lands
use super::promise::Promise;
pub fn pledge(_p: &[Promise]) -> std::io::Result<()> {
    Ok(())
}
pub fn unveil(_p: &[(&str, &str)]) -> std::io::Result<()> {
    Ok(())
}
