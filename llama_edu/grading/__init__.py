"""Grading that a learner cannot forge, in a kernel that cannot harm the instructor's machine.

A graded run splits every check into three parts:

1. the inputs, drawn by the check from a fresh seed the grader picks (`exercises._common.rng`);
2. the learner's function, run on those inputs inside the learner's kernel. A recorder
   (`record`) wraps it and writes every call's argument fingerprint, its result (tensors
   through safetensors, the rest as JSON), its exception or its in-place changes into a
   file in the kernel's work directory;
3. the verdict, computed in the grader's own process (`replay`): the grader's unmodified
   check runs again with the same seed, and a replayer stands in for the learner's
   function. Each call must match the record's fingerprint and gets the recorded result.

So a kernel that patches the checks, torch or the recorder can only lose points: what
counts is whether the recorded outputs are right for the grader's fresh inputs.

The kernel runs contained (`sandbox`, `kernel`): a fresh work directory, a scrubbed
environment, resource limits, its own unprivileged uid when the grader is root, and
bubblewrap (read-only system, no network, private /tmp and /proc) where it is installed.
`flags` reads the answer cells for tampering worth a human look. `grade` puts it together.
"""
