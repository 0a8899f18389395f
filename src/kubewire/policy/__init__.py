"""kubewire.policy: NetworkPolicy -> nftables per node, and the oracle of its semantics (pure).

See README.md. ``compile_policy`` builds a node's ``ip kubewire-policy`` table,
``evaluate.allowed`` answers what Kubernetes says about one connection, and
``fake.cluster_verdict`` what the compiled tables do with it.
"""

from kubewire.policy.compiler import PolicyNode, compile_policy
from kubewire.policy.evaluate import Verdict, allowed
from kubewire.policy.model import Ruleset
from kubewire.policy.views import ExternalView, NamespaceView, PodView, PolicyView

__all__ = [
    "ExternalView",
    "NamespaceView",
    "PodView",
    "PolicyNode",
    "PolicyView",
    "Ruleset",
    "Verdict",
    "allowed",
    "compile_policy",
]
