"""The engine: what turns items into embeddings, with no Ray in it.

Packing items into payloads (`payloads`), batching them (`batching`: router->encoder call
coalescing and device batches), running one tower over a backend (`tower`), the request
work shared by the API and the offline jobs (`embedding_service`), and the interface that
work needs from a served variant (`variant`). Serving (Ray Serve replicas) and the jobs
(Ray Train/Data) are adapters over it; a unit test keeps Ray out of every module here.
"""
