"""What several test modules share: composing configs, fixed models and files, run folders, and a command run in a
fresh process without paying the torch import again. Test modules import from here, never from each other."""
