"""Input limits shared by the annotation parsers and the cache builders, in a module without
imports: ``detect xml2pkl``'s up-to-date check puts them in the fingerprint without loading
the parsers (lxml, numpy)."""

MAX_XML_BYTES = 16 << 20  # one annotation file; real ones are a few KB (16 MiB: ~150,000 objects)
