"""Helper modules whose code digests the hashing tests compare.

The tests copy these files into a temporary package, edit one line (a helper two calls down, a
constant, a default, a method, a comment), import both versions under the same package name
and compare ``code_digest`` before and after. The modules are importable as they are, too.
"""
