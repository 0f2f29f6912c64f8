module github.com/weftnet/weft

go 1.24
