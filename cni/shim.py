def main() -> None:
    print("cni")
