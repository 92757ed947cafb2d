//! [`ListerSettings`]: how a listing pages and how hard it leans on the APIs.

/// How a [`Lister`](super::Lister) pages and how hard it leans on the APIs.
#[derive(Debug, Clone)]
pub struct ListerSettings {
    /// The kubeconfig file for Kubernetes scopes (default: `$KUBECONFIG`, `~/.kube/config`, or
    /// in-cluster when no context is named).
    pub kubeconfig: Option<String>,
    /// Pods per page (`limit`).
    pub kube_page_size: u32,
    /// Calls in flight at once for `DescribeTasks` batches and registry tag resolutions.
    pub concurrency: usize,
}

impl Default for ListerSettings {
    fn default() -> Self {
        Self {
            kubeconfig: None,
            kube_page_size: 500,
            concurrency: 4,
        }
    }
}
