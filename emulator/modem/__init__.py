"""One emulated module: profile (what is imitated), settings, clock, PDP contexts,
and the Modem object that ties them to the interpreter and the features."""
