//! Release manifests: signing, verification and device-side tier selection.
