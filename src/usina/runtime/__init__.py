"""The step runtime: what runs inside a worker process (local fork, Kubernetes pod).

``python -m usina.runtime --artifacts URL --attempt ID`` loads the attempt's task record, its
inputs, runs the step's function, and writes its outputs and a result record (or an error
record and one of the exit codes in ``usina.engine.ports``).
"""
