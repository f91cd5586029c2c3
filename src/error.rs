//! The library's one error type. Every fallible public function returns [`Result`]; nothing on a
//! library path panics on user input.

use std::fmt;

/// Everything that can go wrong in headswap, each variant carrying enough context to act on.
#[derive(Debug)]
pub enum Error {
    /// No usable GPU adapter was found. `tried` says which backends were asked for.
    NoAdapter { tried: String },
    /// The adapter refused to create a device.
    RequestDevice(String),
    /// Two shapes that must agree do not (`what` names the operation and the operands).
    Shape { what: String },
    /// A tensor or model exceeds a limit of the adapter (storage binding size, buffer size, ...).
    TooLarge { what: String, bytes: u64, limit: u64, limit_name: &'static str },
    /// The device's limit `limit_name` is below what `what` needs. `device` is the device's value
    /// (the limits the program that created the device requested), `adapter` the adapter's where
    /// known: a host that requested less than the adapter has can request more.
    DeviceLimit { what: String, limit_name: &'static str, needed: u64, device: u64, adapter: Option<u64> },
    /// wgpu reported a validation or out-of-memory error while creating or running `kernel`.
    Gpu { kernel: String, message: String },
    /// Waiting for the device, or mapping a buffer, failed (device lost, timeout).
    Device(String),
    /// Bad user input that is not a shape problem: a label out of range, an empty data set, ...
    InvalidInput(String),
    /// A file could not be read or written.
    Io { path: String, source: std::io::Error },
    /// A file was read but its contents are not what they must be (truncated, corrupt, wrong names).
    Format { path: String, message: String },
}

/// `Result<T, headswap::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoAdapter { tried } => write!(
                f,
                "no GPU adapter found (tried backends: {tried}); install a driver, or a software one: \
                 `apt-get install mesa-vulkan-drivers` on Debian/Ubuntu gives Vulkan's lavapipe"
            ),
            Error::RequestDevice(m) => write!(f, "the adapter refused to create a device: {m}"),
            Error::Shape { what } => write!(f, "shape mismatch: {what}"),
            Error::TooLarge { what, bytes, limit, limit_name } => {
                write!(f, "{what} needs {bytes} bytes, more than the device's {limit_name} of {limit} bytes")
            }
            Error::DeviceLimit { what, limit_name, needed, device, adapter } => {
                write!(f, "{what} needs {limit_name} ≥ {needed}; the device allows {device}")?;
                match adapter {
                    Some(a) if a > device => write!(
                        f,
                        " (requested by the program that created it; the adapter allows {a}: \
                         request it in wgpu::DeviceDescriptor::required_limits)"
                    ),
                    Some(_) => write!(f, " (all its adapter has)"),
                    None => write!(f, " (requested by the program that created it; the adapter's limit is unknown)"),
                }
            }
            Error::Gpu { kernel, message } => write!(f, "GPU error in {kernel}: {message}"),
            Error::Device(m) => write!(f, "GPU device error: {m}"),
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::Io { path, source } => write!(f, "{path}: {source}"),
            Error::Format { path, message } => write!(f, "{path}: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    pub(crate) fn shape(what: impl Into<String>) -> Self {
        Error::Shape { what: what.into() }
    }
    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Error::InvalidInput(what.into())
    }
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), source }
    }
    pub(crate) fn format(path: impl AsRef<std::path::Path>, message: impl Into<String>) -> Self {
        Error::Format { path: path.as_ref().display().to_string(), message: message.into() }
    }
}
