{
  description = "Micelio: a federated forge for agent-first development (hif + micelio)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachDefaultSystem (system:
      let
        pkgs = import nixpkgs { inherit system; };
        python = pkgs.python311;
        py = python.pkgs;
        # The runtime dependencies of pyproject.toml, as nixpkgs packages them. pyproject pins exact
        # versions; nixpkgs ships its own, so the pins are relaxed here (pythonRelaxDeps).
        runtimeDeps = with py; [
          cbor2
          zstandard
          click
          rich
          quart
          hypercorn
          aiobotocore
          httpx
          pynacl
          sqlite-utils
          jinja2
          pygments
          markdown-it-py
          nh3
          http-message-signatures
          mcp
          uvloop
        ];
        micelio = py.buildPythonApplication {
          pname = "micelio";
          version = "0.1.0";
          pyproject = true;
          src = ./.;
          build-system = with py; [ setuptools wheel ];
          dependencies = runtimeDeps;
          pythonRelaxDeps = true;
          doCheck = false; # the suite starts servers and subprocesses: run it with `make test`
          meta = {
            description = "hif (version control that keeps why) and micelio (the forge node)";
            license = pkgs.lib.licenses.asl20;
            mainProgram = "micelio";
          };
        };
      in
      {
        packages = {
          default = micelio;
          micelio = micelio;
          hif = micelio; # one Python distribution provides both the hif and micelio commands
        };

        apps = {
          default = { type = "app"; program = "${micelio}/bin/micelio"; };
          hif = { type = "app"; program = "${micelio}/bin/hif"; };
        };

        devShells.default = pkgs.mkShell {
          packages = [
            (python.withPackages (ps: runtimeDeps ++ (with ps; [ pytest hypothesis moto ])))
            pkgs.ruff
            pkgs.git
          ];
          shellHook = ''
            export PYTHONPATH="$PWD''${PYTHONPATH:+:$PYTHONPATH}"
          '';
        };
      });
}
