#include <cstdio>
int main() { std::puts("cbagate " CBAGATE_VERSION); return 0; }
