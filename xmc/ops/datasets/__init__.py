"""Standard XMC benchmarks: ``registry`` (what we know) -> ``archive`` (download, verify, unpack)
-> ``convert`` (a features bundle) ; ``fetch`` runs the whole chain and lists the cache."""
