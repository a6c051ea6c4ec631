# fish completion for corral: click's script, from corral itself
_CORRAL_COMPLETE=fish_source corral 2>/dev/null | source
