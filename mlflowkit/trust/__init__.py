"""Governance: keys, signatures, the policy and its roles, the audit chain.

Pure functions over bytes and records (layer 4): the store calls this package, it never calls
the store. Importing it is light; ``cryptography`` is imported only when a key is made,
loaded, or a signature is made or checked.

Modules:

``keys``      Ed25519 keys on disk, the process's signing key, key ids
``signing``   what a signature covers (objects, sealed JSON documents) and its encoding
``policy``    the signed policy of a store: roles per namespace, its version chain
``audit``     the hash-chained, signed audit trail

Invariants:

* A signature is checked against the public key it carries, and that key's id is derived from
  the key itself: no key id is ever trusted because a file says so.
* Whether a signer is *allowed* is decided by the caller with ``policy.Policy.holds`` (or,
  without a policy, by the store's owner key and the reader's own key).
"""
