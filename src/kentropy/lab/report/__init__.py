"""The lab report: the core study's sections (`core`), each study's section (`decay`, `loop`, `circuits`),
figures and the one number formatter."""
