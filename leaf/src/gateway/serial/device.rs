//! Which device file a configured port opens: a path, a name the board defines
//! (`serial0`), or the USB adapter with given vendor, product and serial number.
//!
//! Resolution runs before every (re)open: a USB adapter that comes back on another
//! `ttyUSBn` is found again, and a `/dev/serial/by-id/...` link that reappears is followed.

use std::path::{Path, PathBuf};

use crate::gateway::config::serial::{Device, UsbMatch};

use super::super::Board;

/// Why a device could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    /// A name that is neither a path nor defined by the board (a configuration error).
    #[error("`{name}` is not a path and {}", match board {
        Some(b) => format!("board `{b}` does not define it"),
        None => "no board is configured to define it".to_owned(),
    })]
    UnknownAlias {
        /// The configured name.
        name: String,
        /// The configured board, if any.
        board: Option<String>,
    },
    /// No USB serial adapter with these ids is plugged in (yet).
    #[error("no USB serial adapter {vid}:{pid}{} is plugged in", serial.as_ref().map(|s| format!(" with serial {s}")).unwrap_or_default())]
    UsbNotFound {
        /// The vendor id.
        vid: String,
        /// The product id.
        pid: String,
        /// The serial number, if configured.
        serial: Option<String>,
    },
}

impl DeviceError {
    /// Whether the error is in the configuration (refused at startup) rather than a device
    /// that is absent for now (waited for).
    pub fn is_config(&self) -> bool {
        matches!(self, DeviceError::UnknownAlias { .. })
    }
}

/// The device path for `device`: paths as given, board aliases through `board`, USB ids by
/// scanning sysfs.
///
/// # Errors
/// [`DeviceError`].
pub fn resolve(device: &Device, board: Option<&Board>) -> Result<PathBuf, DeviceError> {
    resolve_in(device, board, Path::new("/sys/class/tty"))
}

/// [`resolve`] with the sysfs tty class directory given (tests build a fake one).
pub fn resolve_in(
    device: &Device,
    board: Option<&Board>,
    sys_tty: &Path,
) -> Result<PathBuf, DeviceError> {
    match device {
        Device::Path(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
        Device::Path(name) => board
            .and_then(|b| b.serial_device(name))
            .map(PathBuf::from)
            .ok_or_else(|| DeviceError::UnknownAlias {
                name: name.clone(),
                board: board.map(|b| b.name.clone()),
            }),
        Device::Usb(usb) => find_usb(usb, sys_tty).ok_or_else(|| DeviceError::UsbNotFound {
            vid: usb.vid.clone(),
            pid: usb.pid.clone(),
            serial: usb.serial.clone(),
        }),
    }
}

/// Scans `<sys_tty>/<name>/device`, walking up to the USB device directory (the one with
/// `idVendor`), for the adapter `usb`; returns `/dev/<name>` of the first match, in name
/// order.
fn find_usb(usb: &UsbMatch, sys_tty: &Path) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(sys_tty)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().find_map(|name| {
        let device = std::fs::canonicalize(sys_tty.join(&name).join("device")).ok()?;
        let usb_dir = device
            .ancestors()
            .take(4)
            .find(|d| d.join("idVendor").is_file())?;
        let read = |f: &str| {
            std::fs::read_to_string(usb_dir.join(f))
                .ok()
                .map(|s| s.trim().to_owned())
        };
        let same = |a: Option<String>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
        let serial_ok = usb
            .serial
            .as_deref()
            .is_none_or(|s| read("serial").as_deref() == Some(s));
        (same(read("idVendor"), &usb.vid) && same(read("idProduct"), &usb.pid) && serial_ok)
            .then(|| PathBuf::from("/dev").join(&name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs layout as the kernel makes it for a USB serial adapter:
    /// `class/tty/ttyUSB0/device -> devices/usb1/1-1/1-1:1.0/ttyUSB0`, with the ids in
    /// `1-1`.
    fn fake_sysfs(dir: &Path, tty: &str, bus: &str, vid: &str, pid: &str, serial: &str) {
        let usb = dir.join("devices").join(bus);
        let port = usb.join(format!("{bus}:1.0")).join(tty);
        std::fs::create_dir_all(&port).unwrap();
        std::fs::write(usb.join("idVendor"), format!("{vid}\n")).unwrap();
        std::fs::write(usb.join("idProduct"), format!("{pid}\n")).unwrap();
        std::fs::write(usb.join("serial"), format!("{serial}\n")).unwrap();
        let class = dir.join("class/tty").join(tty);
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(&port, class.join("device")).unwrap();
    }

    #[test]
    fn usb_adapters_are_found_by_ids_and_serial() {
        let dir = tempfile::tempdir().unwrap();
        fake_sysfs(dir.path(), "ttyUSB0", "1-1", "0403", "6001", "A1");
        fake_sysfs(dir.path(), "ttyUSB1", "1-2", "0403", "6001", "B2");
        std::fs::create_dir_all(dir.path().join("class/tty/ttyS0")).unwrap();
        let sys = dir.path().join("class/tty");
        let usb = |serial: Option<&str>| {
            Device::Usb(UsbMatch {
                vid: "0403".into(),
                pid: "6001".into(),
                serial: serial.map(str::to_owned),
            })
        };
        assert_eq!(
            resolve_in(&usb(Some("B2")), None, &sys).unwrap(),
            PathBuf::from("/dev/ttyUSB1")
        );
        assert_eq!(
            resolve_in(&usb(None), None, &sys).unwrap(),
            PathBuf::from("/dev/ttyUSB0")
        );
        let missing = resolve_in(&usb(Some("C3")), None, &sys).unwrap_err();
        assert!(!missing.is_config());
        assert!(
            missing.to_string().contains("0403:6001 with serial C3"),
            "{missing}"
        );
    }

    #[test]
    fn paths_and_aliases() {
        let sys = Path::new("/nonexistent");
        assert_eq!(
            resolve_in(&Device::Path("/dev/ttyX".into()), None, sys).unwrap(),
            PathBuf::from("/dev/ttyX")
        );
        let err = resolve_in(&Device::Path("serial0".into()), None, sys).unwrap_err();
        assert!(err.is_config());
        assert!(err.to_string().contains("no board"), "{err}");
    }
}
