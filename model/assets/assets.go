// Package assets embeds the default model of `deft generate`:
// stories260K.gguf, a tiny Llama trained on TinyStories (llama2.c's
// tinyllamas, MIT license: see LICENSE beside it).
package assets

import _ "embed"

// Stories260K is the bytes of stories260K.gguf (all tensors F32, 512-token
// SentencePiece vocabulary, 512-token context).
//
//go:embed stories260K.gguf
var Stories260K []byte

// Stories260KName is the name the embedded model is known by.
const Stories260KName = "stories260K.gguf"
