"""llama_edu: the helper package of the llama-edu course, one module per lesson's idea.

Read it in lesson order: tokenizer, positions, norms, ffn, attention, flash, model,
interop, stories, data, checkpoint, train, generate, parallel, chat. `numerics` says how
close two float results must be; `precision` picks the compute dtype; `profiling`
measures memory, speed and FLOPs; `files` writes files atomically and names damaged ones;
`viz` and `widgets` draw; `exercises` checks learners' answers; `assignments` releases and
grades student notebooks.
"""

__version__ = "0.1.0"
