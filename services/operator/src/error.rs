//! The reconciler's errors.

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    #[error("the resource has no {0}")]
    MissingObjectKey(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, bounded label for the failures metric.
    pub fn metric_label(&self) -> &'static str {
        use kube::runtime::finalizer::Error as Finalizer;
        match self {
            Error::Kube(_) => "kube_api",
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::Finalizer(inner) => match inner.as_ref() {
                Finalizer::ApplyFailed(e) | Finalizer::CleanupFailed(e) => e.metric_label(),
                Finalizer::AddFinalizer(_) | Finalizer::RemoveFinalizer(_) => "finalizer_patch",
                Finalizer::UnnamedObject | Finalizer::InvalidFinalizer => "finalizer_invalid",
            },
        }
    }
}
